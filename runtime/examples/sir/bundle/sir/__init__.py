"""A stochastic SIR epidemic model, packaged as a modelops bundle.

Entrypoints: ``sir.model:simulate`` (one seeded run) and ``sir.aggregate:peak_summary``
(mean and spread of the epidemic peak over seeds).
"""
