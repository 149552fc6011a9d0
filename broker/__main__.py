"""`python -m broker`: same as `chat-broker`."""

import sys

from broker.cli import main

sys.exit(main())
