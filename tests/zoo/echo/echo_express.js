// Parser zoo: Express 4 (npm, pinned in ../express/package.json) on Node's http server.
// Query: Express's default "query parser" setting ("extended": qs.parse with allowPrototypes).
// Form: express.urlencoded({ extended: true }) = body-parser 1.x urlencoded with its defaults
// (qs, limit 100kb, parameterLimit 1000, depth 32, inflate true, utf-8 only, any method whose
// request has a body). req.query is "query", req.body is "form", "params" is null.
// When body-parser fails it calls next(err); Express's default would answer err.status with an
// HTML page before any route runs. Here an error middleware answers the contract instead, with
// parse_error "<status> <type>: <message>" and form = whatever req.body holds at that point.
// Usage: node echo_express.js PORT
'use strict';
const path = require('path');
const { createRequire } = require('module');
const express = createRequire(path.join(__dirname, '..', 'express', 'package.json'))('express');

let seq = 0;
const app = express();

function answer(req, res, err) {
  seq += 1;
  const headers = {};
  for (const [k, v] of Object.entries(req.headers)) headers[k] = Array.isArray(v) ? v : [v];
  const out = {
    framework: 'express',
    seq,
    method: req.method,
    route: req.path,
    script_name: req.baseUrl,
    query: req.query === undefined ? null : req.query,
    form: req.body === undefined ? null : req.body,
    params: null,
    headers,
    parse_error: err ? `${err.status || ''} ${err.type || err.name}: ${err.message}`.trim() : null,
  };
  res.status(200).type('application/json').send(JSON.stringify(out));
}

app.use(express.urlencoded({ extended: true }));
app.use((req, res) => answer(req, res, null));
// eslint-disable-next-line no-unused-vars
app.use((err, req, res, next) => answer(req, res, err));

app.listen(Number(process.argv[2]), '127.0.0.1');
