"""Integrations with other tools: ``greenpatch.contrib.gunicorn`` (a gunicorn worker)."""
