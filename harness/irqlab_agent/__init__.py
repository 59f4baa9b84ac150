"""irqlab guest agent: arms each interrupt notification path on /dev/irqlabN and
streams the events back as JSON lines (stdlib only, Python >= 3.11).

Run as ``python3 -m irqlab_agent``; see :mod:`irqlab_agent.protocol`.
"""

__version__ = "0.1.0"
