"""The running mu node on trio: transport, DHT, store, ledger, wallet, chain, CLI."""
