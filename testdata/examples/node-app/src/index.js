'use strict';
const http = require('http');
const { greet } = require('greeting');

const port = Number(process.env.PORT || 3000);
const server = http.createServer((req, res) => {
  const name = new URL(req.url, 'http://localhost').searchParams.get('name') || 'world';
  res.setHeader('content-type', 'text/plain; charset=utf-8');
  res.end(`${greet(name)}\nserved by node, NODE_ENV=${process.env.NODE_ENV}\n`);
});
server.listen(port, () => console.log(`listening on ${port}`));
// As PID 1 in a container, node gets no default SIGTERM handling: exit explicitly.
process.on('SIGTERM', () => process.exit(0));
