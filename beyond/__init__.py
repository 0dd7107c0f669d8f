"""Everything beyond the TFRS tutorial that recommend.py is: one module per capability, each importing
the core (recommend.py) and never imported by it, except beyond.cli from its main(). docs/architecture.md
draws the layout and which way the imports point."""
