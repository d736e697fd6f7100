"""dockwise: a chat teammate that explains containers and images."""

__version__ = "0.1.0"
