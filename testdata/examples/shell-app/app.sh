#!/bin/sh
# Greets its argument in every language listed at build time, then says who it runs as.
set -eu
. "$APP_HOME/lib/format.sh"
name=${1:-world}
banner "greeter $(cat "$APP_HOME/build-info")"
while read -r lang; do
  say "$lang" "$(cat "$APP_HOME/greetings/$lang")" "$name"
done < "$APP_HOME/greetings.index"
echo "running as $(id -un) in $(pwd); state in /var/lib/app ($(stat -c %U /var/lib/app))"
