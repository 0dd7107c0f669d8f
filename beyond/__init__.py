"""Everything beyond the TFRS tutorial that recommend.py is: one module per capability, each importing
the core (recommend.py) and never imported by it, except beyond.cli from its main() and beyond.launch
when it is run as a program. docs/architecture.md draws the layout and which way the imports point."""
