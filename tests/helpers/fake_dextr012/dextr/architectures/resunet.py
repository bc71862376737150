"""U-Net on a torchvision ResNet with ``dextr`` 0.1.2's attribute names and forward."""
import torch.nn as nn
import torch.nn.functional as F
from torchvision import models


class DecoderBlock(nn.Module):
    def __init__(self, x_chn_in, skip_chn_in, chn_out):
        super().__init__()
        self.x_chn_in, self.skip_chn_in, self.chn_out = x_chn_in, skip_chn_in, chn_out
        self.up = nn.Upsample(scale_factor=2)
        self.conv = nn.Conv2d(x_chn_in, chn_out, 3, padding=1, bias=False)
        self.conv_bn = nn.BatchNorm2d(chn_out)

    def forward(self, x, skip):
        return F.relu(self.conv_bn(self.conv(self.up(x) + skip)))


class ResUNet(nn.Module):
    def __init__(self, base_model, channels, num_classes=1):
        super().__init__()
        c1, l1, l2, l3, l4 = channels
        self.base_model = base_model
        self.line0_conv = nn.Conv2d(l4, l3, 1)
        self.decoder3 = DecoderBlock(l3, l3, l2)
        self.decoder2 = DecoderBlock(l2, l2, l1)
        self.decoder1 = DecoderBlock(l1, l1, c1)
        self.decoder0 = DecoderBlock(c1, c1, 64)
        self.final_dec_up = nn.Upsample(scale_factor=2)
        self.final_dec_conv = nn.Conv2d(64, 64, 3, padding=1, bias=False)
        self.final_dec_drop = nn.Dropout(0.3)
        self.final_dec_bn = nn.BatchNorm2d(64)
        self.final_clf = nn.Conv2d(64, num_classes, 1)

    def forward(self, x):
        b = self.base_model
        r2 = x = b.bn1(b.conv1(x))
        x = b.maxpool(b.relu(x))
        r4 = x = b.layer1(x)
        r8 = x = b.layer2(x)
        r16 = x = b.layer3(x)
        x = self.line0_conv(b.layer4(x))
        x = self.decoder0(self.decoder1(self.decoder2(self.decoder3(x, r16), r8), r4), r2)
        x = F.relu(self.final_dec_bn(self.final_dec_drop(self.final_dec_conv(self.final_dec_up(x)))))
        return dict(out=self.final_clf(x))


def dextr_resunet18(num_classes=1):
    base = models.resnet18(weights=None)
    base.conv1 = nn.Conv2d(4, 64, 7, stride=2, padding=3, bias=False)
    model = ResUNet(base, (64, 64, 128, 256, 512), num_classes)
    pretrained = list(model.base_model.parameters())
    ids = {id(p) for p in pretrained}
    model.pretrained_parameters = pretrained
    model.new_parameters = [p for p in model.parameters() if id(p) not in ids]
    return model
