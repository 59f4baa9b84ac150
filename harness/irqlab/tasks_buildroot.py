"""invoke tasks for the Buildroot guest; tasks.py imports them (see README).

``invoke buildroot-build``  download the pinned Buildroot, build the image (30-60 min cold)
``invoke buildroot-check``  offline checks of buildroot/ against a Buildroot source tree
"""

from __future__ import annotations

import sys

from invoke.context import Context
from invoke.tasks import task


@task(
    help={
        "force": "rebuild even if the cache has an image for the current inputs",
        "clean": "remove Buildroot's output directory first (a cold build)",
        "jobs": "BR2_JLEVEL (default: Buildroot's, CPUs + 1)",
        "verbose": "show all of Buildroot's output, not only its '>>>' step lines",
    }
)
def buildroot_build(
    c: Context, force: bool = False, clean: bool = False, jobs: int = 0, verbose: bool = False
) -> None:
    """Build the Buildroot guest image (downloads Buildroot and its toolchain; 30-60 min cold).

    BR2_DL_DIR and BR2_CCACHE_DIR choose Buildroot's download and ccache directories.
    """
    from irqlab.buildroot import ensure_image

    img = ensure_image(force=force, clean=clean, jobs=jobs, verbose=verbose)
    print(f"Buildroot image {img.version}: {img.kernel} + {img.initramfs} ({img.size} bytes)")


@task(
    help={
        "tree": "Buildroot source tree (default: $IRQLAB_BUILDROOT_DIR)",
        "download": "use the pinned release, downloading it if needed (needs internet)",
        "python": "interpreter for check-package (needs the magic and flake8 modules)",
    }
)
def buildroot_check(c: Context, tree: str = "", download: bool = False, python: str = "") -> None:
    """Offline checks of buildroot/: defconfig, check-dotconfig, show-info, check-package."""
    from irqlab import buildroot as br

    src = br.ensure_source() if download else br.source_tree(tree or None)
    results = br.offline_checks(src, python=python or sys.executable)
    print(br.format_results(results))
    failed = [r.name for r in results if not r.ok]
    if failed:
        sys.exit(
            f"buildroot-check: {len(failed)} of {len(results)} checks failed: {', '.join(failed)}"
        )
    print(f"buildroot-check: all {len(results)} checks passed")
