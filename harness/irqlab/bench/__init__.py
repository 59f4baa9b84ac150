"""``irqlab bench`` / ``invoke bench``: measure the harness and the guest, honestly.

Modules, one job each:

* :mod:`.stats`   pure maths: nearest-rank percentiles, summaries, CDF points, spread,
                  agreement of exact per-event latencies with the device's log2 histogram
* :mod:`.env`     where a result came from: machine, load, git commit, versions
* :mod:`.guest`   a :class:`~irqlab.vm.guest.Guest` with phase timings and optional rt-tests
* :mod:`.latency` raise -> userspace-ACK latency per notification path (device clock)
* :mod:`.storm`   the burst generator at rising rates: raised/delivered/observed/lost
* :mod:`.host`    QMP injection round trip + sustained rate, boot timings, ``invoke test-all``
* :mod:`.cyclic`  cyclictest in the same boot (the guest's own scheduling floor)
* :mod:`.runner`  the whole bench: configuration, order, JSON result
* :mod:`.metrics` the flat metric list (value, unit, direction, noise) compare works on
* :mod:`.report`  human text, static HTML and PNG plots from a result JSON
* :mod:`.compare` "what got slower beyond noise" between two result JSONs
* :mod:`.cli`     the ``bench`` subcommand
"""

SCHEMA = "irqlab-bench/1"
