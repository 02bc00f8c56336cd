"""The streaming driver: Apache Beam transforms around the pure core. Only this package imports apache_beam."""
