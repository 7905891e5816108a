"""One module per API resource. Handlers translate HTTP into storage calls and back; storage runs in
the thread pool (it is synchronous), never on the event loop."""
