"""The webhook receiver: verified, exactly-once, durable collection of Replicate predictions."""
