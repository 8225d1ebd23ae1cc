"""The protocol edge and cloud speak: topics, messages, framing, codecs, chunks, MQTT."""
