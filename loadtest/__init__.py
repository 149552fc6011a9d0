"""chat-loadtest: many real clients against a broker; throughput, latency, losses."""
