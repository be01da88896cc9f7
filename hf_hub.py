"""
hf_hub.py: whether the Hugging Face hub can be used, decided in one place for every loader of this repository.

  from hf_hub import hub_offline
  offline = hub_offline()   # True: HF_HUB_OFFLINE / HF_DATASETS_OFFLINE set, or huggingface.co refuses a connection

Offline, datasets and huggingface_hub retry a missing file for minutes before they fail; hub_offline() asks once per
process (one TCP connection to HF_ENDPOINT's host, port 443, at most `timeout` seconds) and, when the hub cannot be
used, switches both libraries to their offline mode, so that a cached file still loads and a missing one fails at
once. The error sentences of eval.py, hf_lm.py, text_sources.py, tasks/ and data/prepare.py use its answer to say
why a load failed. Standard library only: data/ scripts import it without torch.
"""

import os
import socket
import sys
from urllib.parse import urlparse

FLAGS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
PROXIES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
_OFFLINE = None  # hub_offline()'s answer, found once per process


def hub_offline(timeout=3.0):
    """True when the Hugging Face hub cannot be used: HF_HUB_OFFLINE or HF_DATASETS_OFFLINE is set, or the hub's
    host does not accept a connection within `timeout` seconds (asked once per process). Offline, the hub
    libraries are switched to offline mode too: a cached dataset still loads, a missing one fails at once
    instead of after minutes of retries."""
    global _OFFLINE
    if _OFFLINE is None:
        offline = any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on") for k in FLAGS)
        proxy = any(os.environ.get(k) for k in PROXIES)
        if not offline and not proxy:  # behind a proxy only the libraries know the way out: let them try
            host = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co")).hostname
            try:
                socket.create_connection((host, 443), timeout=timeout).close()
            except OSError:
                offline = True
        if offline:
            os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
            for module, name in (("huggingface_hub.constants", "HF_HUB_OFFLINE"),
                                 ("datasets.config", "HF_HUB_OFFLINE"), ("datasets.config", "HF_DATASETS_OFFLINE")):
                loaded = sys.modules.get(module)  # already imported: they read the variables at import time
                if loaded is not None and hasattr(loaded, name):
                    setattr(loaded, name, True)
        _OFFLINE = offline
    return _OFFLINE
