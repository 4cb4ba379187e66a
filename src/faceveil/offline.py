"""What keeps faceveil off the network at run time.

Anonymizing, recovering, detecting, inspecting and the web page never reach the network
(``tests/test_network.py`` watches every socket call). Two libraries would otherwise:

* onnxruntime (1.32 on Linux) carries a telemetry client (Microsoft's 1DS): each
  process that made a session looked up ``mobile.events.data.microsoft.com`` and kept a
  device id and a queue of events in ``~/.cache/Microsoft/DeveloperTools/.onnxruntime``.
  ``onnxruntime.disable_telemetry_events()`` alone did not stop the lookups; the
  environment variable ``ORT_DISABLE_TELEMETRY=1``, set before onnxruntime is imported,
  stops both (measured with strace). :func:`onnxruntime` is the one door through which
  faceveil imports it (the face detector and the built-in model);
* the Hugging Face libraries look things up on the hub and send telemetry unless told
  not to; faceveil only ever reads their cache (``local_files_only``), and the command
  line also sets their offline and no-telemetry switches (:func:`hub_offline`) for every
  command but ``faceveil models pull``, before any of them is imported.
"""

from __future__ import annotations

import os
from types import ModuleType

# Read by huggingface_hub, diffusers and transformers when they are imported.
HUB_OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
               "DISABLE_TELEMETRY": "1"}


def hub_offline(offline: bool = True) -> None:
    """Set the Hugging Face libraries' no-telemetry switches and, with ``offline``, their
    offline switch (what the user set stays)."""
    for name, value in HUB_OFFLINE.items():
        if offline or name != "HF_HUB_OFFLINE":
            os.environ.setdefault(name, value)


def onnxruntime() -> ModuleType:
    """onnxruntime, imported with its telemetry switched off (a program that imported it
    before faceveil did must set ``ORT_DISABLE_TELEMETRY=1`` itself)."""
    os.environ["ORT_DISABLE_TELEMETRY"] = "1"  # read by onnxruntime's native code
    import onnxruntime as ort

    ort.disable_telemetry_events()
    return ort
