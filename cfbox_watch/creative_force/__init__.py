"""Creative Force External Post workflow (docs/creative-force.md): completion logs,
round-trip tracking, accepted return names.  Decisions live in `completion_log` and
`roundtrip` (pure); `state` holds the tables; `engine` is the `<entry>:cf` Side."""
