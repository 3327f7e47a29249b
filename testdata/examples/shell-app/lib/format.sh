# Output helpers for app.sh.
banner() { echo "== $1 =="; }
say() { printf '%-3s %s, %s!\n' "$1" "$2" "$3"; }
