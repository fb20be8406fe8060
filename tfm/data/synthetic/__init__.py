"""Generators of the bundled synthetic sets (Brown NER, Brown QA, Fashion-MNIST scenes): ordinary
producers of examples that the DataModules read like any other source."""
