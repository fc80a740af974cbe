"""The console's pages, a module a group: each a ``Pages`` class whose ``routes()`` the app mounts."""
