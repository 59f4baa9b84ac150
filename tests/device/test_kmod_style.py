"""The guest driver passes the kernel's checkpatch.pl --strict and sparse, with no finding.

checkpatch.pl and its data files come from Debian's linux-source-6.1 package
(:func:`irqlab.build.kmod.ensure_checkpatch`, cached); sparse is Debian's ``sparse``
package.  A missing tool fails the test with what to install; nothing is skipped.
"""

from __future__ import annotations

from irqlab.build.kmod import CHECKPATCH_IGNORE, checkpatch_findings, sparse_findings


def test_driver_passes_checkpatch_strict() -> None:
    found = checkpatch_findings()
    assert not found, (
        f"checkpatch.pl --strict (ignoring {', '.join(CHECKPATCH_IGNORE)}):\n" + "\n".join(found)
    )


def test_driver_is_sparse_clean() -> None:
    found = sparse_findings()
    assert not found, "make C=2 (sparse):\n" + "\n".join(found)
