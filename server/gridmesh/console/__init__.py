"""The web console's static file server (the console itself is the
single-page app under ``console/``; it talks to the mesh only through the
public HTTP/JSON API on the same edge port)."""
