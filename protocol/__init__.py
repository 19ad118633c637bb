"""The IPC contract shared by supervisor, front and worker: messages and framing (a leaf)."""
