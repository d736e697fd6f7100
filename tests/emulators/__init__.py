"""Small in-process emulators of chat platforms, for tests over loopback."""
