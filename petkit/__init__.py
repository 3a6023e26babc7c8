"""petkit: recognise individual animals and faces from photos with metric learning."""

__version__ = "0.1.0"
