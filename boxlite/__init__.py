"""boxlite: embeddable microVM sandboxes."""
