"""`python -m zmq_chat.broker`: same as `chat-broker`."""

import sys

from zmq_chat.broker.cli import main

sys.exit(main())
