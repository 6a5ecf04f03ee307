"""The guided ResNet-LSTM attribute model: training, decoding and evaluation."""
