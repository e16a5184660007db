// The IDE's fetcher, loaded by the page before GraphiQL. Queries and mutations go over HTTP with
// the headers from the Headers tab; subscriptions go over graphql-ws, and the Authorization header
// from that same tab is sent in connection_init, so one token serves both. One WebSocket client
// per distinct token: changing the token opens a new connection.
/* global graphqlWs */
(function () {
  'use strict';
  var endpoint = new URL('/graphql', window.location.href).toString();
  var wsEndpoint = endpoint.replace(/^http/, 'ws');
  var clients = new Map();

  function authorizationOf(headers) {
    var keys = Object.keys(headers || {});
    for (var i = 0; i < keys.length; i++) {
      if (keys[i].toLowerCase() === 'authorization') return String(headers[keys[i]]);
    }
    return '';
  }

  function clientFor(authorization) {
    var client = clients.get(authorization);
    if (!client) {
      client = graphqlWs.createClient({
        url: wsEndpoint,
        lazy: true,
        retryAttempts: 2,
        connectionParams: authorization ? { authorization: authorization } : {},
      });
      clients.set(authorization, client);
    }
    return client;
  }

  // Which operation will run: the named one, or the only one in the document.
  function operationType(query, operationName) {
    var text = query.replace(/#[^\n]*/g, '').replace(/"""[\s\S]*?"""|"(?:\\.|[^"\\])*"/g, '""');
    var depth = 0;
    var found = [];
    var token = /[{}]|\b(query|mutation|subscription)\b\s*([_A-Za-z][_0-9A-Za-z]*)?/g;
    var match;
    while ((match = token.exec(text))) {
      if (match[0] === '{') depth++;
      else if (match[0] === '}') depth--;
      else if (depth === 0) found.push({ type: match[1], name: match[2] || null });
    }
    for (var i = 0; i < found.length; i++) {
      if (!operationName || found[i].name === operationName) return found[i].type;
    }
    return 'query';
  }

  window.paymentsFetcher = function (params, options) {
    var headers = (options && options.headers) || {};
    if (operationType(params.query || '', params.operationName) === 'subscription') {
      return clientFor(authorizationOf(headers)).iterate({
        query: params.query,
        variables: params.variables || undefined,
        operationName: params.operationName || undefined,
      });
    }
    return fetch(endpoint, {
      method: 'POST',
      headers: Object.assign({ 'content-type': 'application/json', accept: 'application/graphql-response+json, application/json' }, headers),
      body: JSON.stringify(params),
    }).then(function (response) {
      return response.json();
    });
  };
})();
