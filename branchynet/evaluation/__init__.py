"""What drives the engines to judge a network: accuracy and time per setting
(``measurement``), the threshold grid (``screening``), the trade-off curve and
its knee (``tradeoff``), thresholds chosen on held-out data (``calibration``)."""
