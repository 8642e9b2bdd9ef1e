"""Box V2 webhooks: signature checks, the HTTP receiver, registration on Download folders.

Webhooks only make the incoming side faster; polling and long-polling stay the safety
net, so every failure here degrades to "the next listing finds it"."""
