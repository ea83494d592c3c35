#!/bin/sh
# The demo app's startup script. The config center delivers it (a Mustache template, rendered per instance)
# with /app/peers.py; the instance asks Discovery for its peers and serves them over HTTP on port 8080.
mkdir -p /tmp/www
echo "{{app.name}}-{{instance.ordinal}} at {{instance.ip}} on {{instance.node}} ({{host.ip}}): asking Discovery for 3 peers"
python3 /app/peers.py {{app.name}} --count 3 --within 300 >/tmp/www/peers.json || exit 1
{
  echo "<html><head><title>{{app.name}}-{{instance.ordinal}}</title></head><body>"
  echo "<h1>{{app.name}}-{{instance.ordinal}} at {{instance.ip}} on {{instance.node}}</h1><p>peers from Discovery:</p><pre>"
  cat /tmp/www/peers.json
  echo "</pre></body></html>"
} >/tmp/www/index.html
echo "peers: $(tr -d ' \n' </tmp/www/peers.json)"
cd /tmp/www && exec python3 -m http.server 8080
