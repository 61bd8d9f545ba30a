"""Reading recommendations out of pgvector (the Edge Function's SQL serves the app)."""
