"""Reports: metrics from predictions, and the plots a researcher reads."""
