"""`python -m client ...` runs the terminal client (same as the `chat-client` script)."""

import sys

from zmq_chat.client.cli import main

sys.exit(main())
