"""gpucaas: GPU Containers-as-a-Service on NVIDIA HGX boards.

The pure core is :mod:`gpucaas.topology` (board models and partition tables) and
:mod:`gpucaas.placement` (which partition, on which board). :mod:`gpucaas.sim` replays
cluster traces through the same placement functions the control plane uses.
"""

__version__ = "0.1.0"
