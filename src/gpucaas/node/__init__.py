"""Node agent: GPU discovery, VFIO, module-ID map, CDI specs (device plugin to come)."""
