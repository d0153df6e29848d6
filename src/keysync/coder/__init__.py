"""The adapter to Coder's keys API: the client, retry decisions and the HTTP transport."""
