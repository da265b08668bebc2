"""The boxlite guest agent: runs as the VM's init child and serves the portal (gRPC on vsock port 2695).

It never imports host code; it shares only `proto/portal.proto` with the host (stubs in `guest._portal`).
"""

__version__ = "0.1.0"
