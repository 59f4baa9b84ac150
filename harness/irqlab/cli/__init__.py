"""The ``irqlab`` command line (:func:`irqlab.cli.main.main`)."""
