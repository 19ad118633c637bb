"""The shared leaf of supervisor, front and worker: IPC messages, framing, and common policies."""
