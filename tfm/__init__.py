"""tfm: Transformer experiments on PyTorch Lightning.

``tfm.nn`` is the plain-PyTorch backbone, ``tfm.tasks`` the LightningModules, ``tfm.data`` the
DataModules; ``python -m tfm fit --config configs/<experiment>.yaml`` runs them.
"""

__version__ = "0.1.0"
