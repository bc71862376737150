"""What every layer shares: reading images, and extreme points, boxes and crop geometry (the [y, x] and X,Y conventions)."""
