"""`python -m zmq_chat.web`: chat-web."""

import sys

from zmq_chat.web.cli import main

sys.exit(main())
