from undistill.cli import main

main()
