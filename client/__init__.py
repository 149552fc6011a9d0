"""The chat client: a sans-IO protocol core (client.core), a zmq connection (client.connection) and a
prompt_toolkit terminal UI (client.app). The core and the connection do not depend on the UI, so a
load tester can drive many connections without a terminal.
"""
