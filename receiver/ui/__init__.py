"""The receiver's web console under /ui: server-rendered pages behind the read token."""
