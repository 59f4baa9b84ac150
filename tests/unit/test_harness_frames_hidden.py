"""Every module of irqlab.vm and irqlab.build hides its frames from a failed test's
traceback when the error is an IrqlabError (``__tracebackhide__ = hide_frame`` at module
level, which pytest reads from a frame's globals): a harness function without one of
its own showed its source above the error (``check_module_params`` through
``reload_module``: some 40 lines).  The image's recipe files are left as they are: their
bytes are the image's cache key, and an edit of them rebuilds every user's image."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import irqlab.build
import irqlab.vm
from irqlab.build import image
from irqlab.errors import hide_frame

# files whose own bytes a cache key hashes (image._recipe_sources(), and those two
# hash themselves): not edited for this
KEYED = {p.name for p in image._recipe_sources()} | {"buildroot.py", "devicetree.py"}


def test_every_harness_module_hides_its_frames_from_an_irqlab_errors_traceback() -> None:
    missing = []
    for package in (irqlab.vm, irqlab.build):
        for info in pkgutil.walk_packages(package.__path__, f"{package.__name__}."):
            if info.ispkg:
                continue
            module = importlib.import_module(info.name)
            if package is irqlab.build and Path(str(module.__file__)).name in KEYED:
                continue
            if getattr(module, "__tracebackhide__", None) is not hide_frame:
                missing.append(info.name)
    assert not missing, f"no __tracebackhide__ = hide_frame at module level: {missing}"
