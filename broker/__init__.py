"""The chat broker: a ROUTER socket for requests, replies and private delivery, a PUB socket for
broadcasts and presence, an SQLite store, and one state core that every change goes through."""
