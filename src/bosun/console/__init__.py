"""The governance console: a web page on the HTTP gateway (``bosun gateway run --transport http --console``)."""
